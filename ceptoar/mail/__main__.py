from ceptoar.mail.process import main

main()
